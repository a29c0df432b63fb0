//! The server and client commands of `comb`: serve, sql, function, workflow, invoke,
//! status, workflows, trace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::io::Write as _;

use anyhow::Context;
use clap::{Args, Subcommand};
use comb_client::{Client, Code, ListFilter, RunStatus};
use comb_frontend::{Server, ServerOptions};

/// Exit codes that scripts can rely on.
pub(crate) mod exit {
    /// Success.
    pub(crate) const OK: u8 = 0;
    /// The server failed or could not be reached; a retry may help.
    pub(crate) const UNAVAILABLE: u8 = 1;
    /// The command line or the input was wrong (clap uses 2 for usage errors too).
    pub(crate) const INVALID: u8 = 2;
    /// The workflow ran and failed.
    pub(crate) const FAILED: u8 = 3;
    /// The workflow, run or function named does not exist.
    pub(crate) const NOT_FOUND: u8 = 4;
    /// The run had not ended when the wait ended; it goes on.
    pub(crate) const RUNNING: u8 = 5;
}

/// The exit codes, for `--help`.
pub(crate) const EXIT_CODES: &str = "Exit codes: 0 success; 1 the server failed or is unreachable (a retry may help); \
2 invalid command line or input; 3 the workflow ran and failed; 4 not found; 5 the run has not ended yet.";

/// Where the server is, for the client commands.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The server's address (`host:port` or `http://host:port`; `https://host:port` for a
    /// server that speaks TLS).
    #[arg(long, env = "COMB_ADDR", default_value = "127.0.0.1:7878")]
    addr: String,
    /// The server's bearer token.
    #[arg(long, env = "COMB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of the CA certificate that signed an `https://` server's certificate
    /// (or of a self-signed server's own), trusted instead of the system's CAs.
    #[arg(long, env = "COMB_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Seconds to wait for each call (more than 0, at most a day).
    #[arg(long, default_value = "75", value_parser = call_timeout)]
    timeout: Duration,
}

/// Longest `--timeout` accepted.
const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);

/// Parses `--timeout`: seconds, more than 0 and at most [`CALL_TIMEOUT_MAX`].
fn call_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(seconds) {
        Ok(timeout) if !timeout.is_zero() && timeout <= CALL_TIMEOUT_MAX => Ok(timeout),
        _ => Err(format!("{text} seconds: give more than 0 and at most {} (a day)", CALL_TIMEOUT_MAX.as_secs())),
    }
}

impl Connection {
    async fn connect(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder(&self.addr).timeout(self.timeout);
        if let Some(token) = &self.token {
            builder = builder.token(token);
        }
        if let Some(file) = &self.ca_cert {
            // Standard input may be a command's own input (`-`).
            if file.as_os_str() == "-" {
                return Err(BadInput("--ca-cert takes a file, not standard input".to_owned()).into());
            }
            builder = builder.ca_certificate(read_file(file)?);
        }
        Ok(builder.connect().await?)
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The directory that holds everything: log, state, registrations.
    #[arg(long, default_value = "comb-data")]
    data_dir: PathBuf,
    /// The address to listen on (port 0: any free port, printed at start); anything but
    /// loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,
    /// The bearer token clients must send.
    #[arg(long, env = "COMB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Listen beyond loopback without a token: whoever reaches the port can run every
    /// workflow and read every trace.
    #[arg(long)]
    insecure_no_token: bool,
    /// A PEM file of the server's TLS certificate (its chain), with --tls-key: the server
    /// speaks only TLS, and clients give its https:// address.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// A PEM file of the private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Partitions (fixed when the data directory is created); default: one per core.
    #[arg(long)]
    partitions: Option<u16>,
    /// The example applications to serve (their tables, functions and workflows), by name,
    /// comma-separated: counter, hotel, shop, retwis; `none` for none.
    #[arg(long, value_delimiter = ',', default_value = "counter,hotel,shop,retwis")]
    apps: Vec<String>,
    /// A JSON file of server options (kebab-case names, every one optional), for example
    /// {"tracing": {"retention": 86400000, "flush-age": 5000}, "engine": {"partitions": 4}}.
    #[arg(long)]
    options: Option<PathBuf>,
    /// Keep no traces (no tracing layer, no QueryTraces).
    #[arg(long)]
    no_tracing: bool,
}

/// Builds the stock server: the example applications asked for, over one data directory.
pub(crate) async fn build_server(args: &ServeArgs) -> anyhow::Result<Server> {
    let mut options = match &args.options {
        Some(file) => serde_json::from_str::<ServerOptions>(&read_file(file)?).with_context(|| format!("{} does not hold server options", file.display()))?,
        None => ServerOptions::default(),
    };
    options.token = args.token.clone().or(options.token);
    options.insecure_no_token |= args.insecure_no_token;
    if args.tls_cert.is_some() {
        (options.tls_cert, options.tls_key) = (args.tls_cert.clone(), args.tls_key.clone());
    }
    if let Some(partitions) = args.partitions {
        options.engine.partitions = partitions;
    }
    if args.no_tracing {
        options.tracing.enabled = false;
    }
    let (data_dir, apps) = (args.data_dir.clone(), &args.apps);
    let mut builder = Server::builder().data_dir(data_dir).options(options);
    for name in apps.iter().filter(|a| !a.is_empty() && a.as_str() != "none") {
        let app = comb_examples::app(name).ok_or_else(|| BadInput(format!("there is no example application named {name:?}; choose among counter, hotel, shop, retwis")))?;
        builder = app.install(builder);
    }
    Ok(builder.build().await?)
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (server, listening) = build_server(&args).await?.listen_or_close(args.addr).await?;
    // Printed once the socket listens, with the port chosen when 0 was asked for: a script
    // (or a test) may connect as soon as it reads this line.
    eprintln!(
        "comb serving on {}{} (data in {}, {} partitions, {} runs resumed)",
        if server.tls() { "https://" } else { "" },
        listening.local_addr(),
        args.data_dir.display(),
        server.engine().partitions(),
        server.resumed()
    );
    server.serve_until_signal(listening).await?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub(crate) enum FunctionCommand {
    /// Register a SQL-only function from a JSON file ({"name", "statements": [{"name",
    /// "sql", "params": [input fields]}], "partition_by"}); `-` reads standard input.
    Register {
        /// The definition file.
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Register a workflow from its JSON specification ({"name", "steps", "transactions",
    /// "output"}); a name that exists gets a new version. `-` reads standard input.
    Register {
        /// The specification file.
        file: PathBuf,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The DDL script.
    sql: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    #[command(flatten)]
    connection: Connection,
    /// The workflow's name.
    workflow: String,
    /// Its input, as JSON.
    #[arg(default_value = "null")]
    input: String,
    /// The workflow id: a run with this id happens at most once, so retrying is safe.
    /// Without one, the command makes one (a UUIDv7), and names it when the call fails.
    #[arg(long)]
    id: Option<String>,
    /// Return once the run has durably started; print its id.
    #[arg(long = "async")]
    asynchronous: bool,
    /// Print the whole run (id, status, output or error, times) instead of its output.
    #[arg(long)]
    full: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    connection: Connection,
    /// The run's id.
    id: String,
    /// Wait for the run to end, up to --timeout (asking again each time the server's own
    /// wait, its wait-max, ends first).
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WorkflowsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only runs of this workflow.
    #[arg(long)]
    name: Option<String>,
    /// Only runs in this status.
    #[arg(long, value_enum)]
    status: Option<StatusFilter>,
    /// Most runs to print.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Start after this run id (the last id of a previous listing).
    #[arg(long)]
    after: Option<String>,
}

/// A run's status, for `comb workflows --status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StatusFilter {
    Running,
    Succeeded,
    Failed,
}

/// How `comb trace` prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TraceFormat {
    /// An aligned table.
    Table,
    /// One JSON object a row.
    Json,
    /// CSV with a header line.
    Csv,
}

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    #[command(flatten)]
    connection: Connection,
    /// The query, for example "SELECT function, count(*) FROM function_invocations GROUP BY 1".
    /// Tables: function_invocations, change_data, workflows, read_events.
    sql: String,
    /// How to print the answer.
    #[arg(long, value_enum, default_value_t = TraceFormat::Table)]
    format: TraceFormat,
    /// Answer from the traces as they are, without waiting for them to reach the log's tail.
    #[arg(long)]
    no_catch_up: bool,
}

/// Input the command was given that it cannot use (a file it cannot read): exit code
/// [`exit::INVALID`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadInput(String);

fn read_file(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|err| BadInput(format!("reading standard input: {err}")))?;
        return Ok(text);
    }
    Ok(std::fs::read_to_string(file).map_err(|err| BadInput(format!("reading {}: {err}", file.display())))?)
}

/// Writes one line to standard output (an error, not a panic, when it is closed: see
/// [`stdout_closed`]).
fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    print_line(serde_json::to_string(value)?)
}

/// Whether the command failed only because standard output was closed under it (piped
/// into `head`, say): not a failure of the command, so it exits quietly.
pub(crate) fn stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

pub(crate) async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let lsn = args.connection.connect().await?.execute_sql(&args.sql).await?;
    eprintln!("applied at LSN {lsn}");
    Ok(())
}

pub(crate) async fn function(command: FunctionCommand) -> anyhow::Result<()> {
    let FunctionCommand::Register { file, connection } = command;
    let text = read_file(&file)?;
    let definition: comb_client::SqlFunction = serde_json::from_str(&text).with_context(|| format!("{} is not a function definition", file.display()))?;
    let read_only = connection.connect().await?.register_function(&definition).await?;
    eprintln!("registered function {} ({})", definition.name, if read_only { "read-only" } else { "writes" });
    Ok(())
}

pub(crate) async fn workflow(command: WorkflowCommand) -> anyhow::Result<()> {
    let WorkflowCommand::Register { file, connection } = command;
    let text = read_file(&file)?;
    let registered = connection.connect().await?.register_workflow(&text).await?;
    eprintln!(
        "registered workflow {} version {}: units {}; recorded steps: {}",
        registered.name,
        registered.version,
        registered.units.join(", "),
        if registered.recorded_steps.is_empty() { "none".to_owned() } else { registered.recorded_steps.join(", ") }
    );
    Ok(())
}

pub(crate) async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let input: serde_json::Value = serde_json::from_str(&args.input).context("the input is not JSON")?;
    let client = args.connection.connect().await?;
    // Always an id: a call that times out or loses its connection may have started the
    // run, and only its id lets the user see it, or retry it without running it twice.
    let id = args.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let outcome = if args.asynchronous {
        client.start(&args.workflow, &input, Some(&id)).await
    } else {
        client.invoke::<serde_json::Value>(&args.workflow, &input).id(id.clone()).run().await
    };
    let run = match outcome {
        Ok(run) => run,
        Err(err) if err.code() == Some(Code::DeadlineExceeded) => {
            eprintln!("workflow run {id}: {err}; it may go on: `comb status {id}` shows it, and invoking again with `--id {id}` runs it at most once");
            return Ok(ExitCode::from(exit::RUNNING));
        }
        Err(err) if err.is_retryable() => {
            return Err(anyhow::Error::new(err).context(format!("workflow run {id} (invoking again with `--id {id}` runs it at most once)")));
        }
        Err(err) => return Err(err.into()),
    };
    if args.asynchronous {
        if args.full { print_json(&run)? } else { print_line(&run.id)? }
        if run.status == RunStatus::Failed {
            return Ok(run_failed(&run));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.full {
        print_json(&run)?;
    }
    match run.status {
        RunStatus::Succeeded => {
            if !args.full {
                print_json(&run.output)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RunStatus::Failed => Ok(run_failed(&run)),
        RunStatus::Running => Ok(ExitCode::from(exit::RUNNING)),
    }
}

/// Says that `run` failed, and why: exit code [`exit::FAILED`].
fn run_failed(run: &comb_client::Run) -> ExitCode {
    eprintln!("workflow run {} failed: {}", run.id, run.error.as_deref().unwrap_or_default());
    ExitCode::from(exit::FAILED)
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.connect().await?;
    // The server waits at most its wait-max for one call: a longer --timeout asks again.
    let deadline = std::time::Instant::now() + args.connection.timeout;
    let run = loop {
        match client.get_workflow(&args.id, args.wait).await {
            Ok(run) => break run,
            // The server's wait ended (its wait-max) before ours.
            Err(err) if args.wait && err.code() == Some(Code::DeadlineExceeded) && std::time::Instant::now() < deadline => {}
            Err(err) if args.wait && err.code() == Some(Code::DeadlineExceeded) => {
                eprintln!("workflow run {}: {err}; it had not ended", args.id);
                return Ok(ExitCode::from(exit::RUNNING));
            }
            Err(err) => return Err(err.into()),
        }
    };
    print_json(&run)?;
    Ok(ExitCode::from(match run.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Running => exit::RUNNING,
    }))
}

pub(crate) async fn workflows(args: WorkflowsArgs) -> anyhow::Result<()> {
    let status = args.status.map(|status| match status {
        StatusFilter::Running => RunStatus::Running,
        StatusFilter::Succeeded => RunStatus::Succeeded,
        StatusFilter::Failed => RunStatus::Failed,
    });
    let client = args.connection.connect().await?;
    let mut filter = ListFilter { name: args.name, status, page_size: 0, page_token: args.after };
    let mut left = args.limit;
    while left > 0 {
        filter.page_size = left.min(1000);
        let page = client.list_workflows(&filter).await?;
        for run in &page.runs {
            print_json(run)?;
        }
        left = left.saturating_sub(page.runs.len() as u32);
        // A page may be short, even empty, while more runs follow: its token says so.
        match page.next_page_token {
            Some(token) => filter.page_token = Some(token),
            None => break,
        }
    }
    Ok(())
}

pub(crate) async fn health(connection: Connection) -> anyhow::Result<()> {
    print_json(&connection.connect().await?.health().await?)
}

pub(crate) async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let traces = args.connection.connect().await?.query_traces(&args.sql, !args.no_catch_up).await?;
    let mut out = std::io::stdout().lock();
    write_traces(&mut out, &traces, args.format)?;
    if traces.truncated {
        eprintln!("(the answer was cut at the server's bounds: narrow the query, or add LIMIT)");
    }
    Ok(())
}

/// A value as a table or CSV cell: strings without quotes, NULL as empty.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints a trace answer in the format asked for.
pub(crate) fn write_traces(out: &mut impl std::io::Write, traces: &comb_client::Traces, format: TraceFormat) -> anyhow::Result<()> {
    match format {
        TraceFormat::Table => {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::ASCII_MARKDOWN).set_header(&traces.columns);
            for row in &traces.rows {
                table.add_row(row.iter().map(cell));
            }
            writeln!(out, "{table}")?;
            writeln!(out, "({} row{})", traces.rows.len(), if traces.rows.len() == 1 { "" } else { "s" })?;
        }
        TraceFormat::Json => {
            // An object a row, its keys in the columns' order.
            for row in &traces.rows {
                let fields: Vec<String> = traces.columns.iter().zip(row).map(|(column, value)| format!("{}:{value}", serde_json::Value::from(column.as_str()))).collect();
                writeln!(out, "{{{}}}", fields.join(","))?;
            }
        }
        TraceFormat::Csv => {
            // The writer's I/O errors as themselves, so that a closed output is told apart.
            let io = |err: csv::Error| match err.into_kind() {
                csv::ErrorKind::Io(err) => anyhow::Error::new(err),
                other => anyhow::anyhow!("writing CSV: {other:?}"),
            };
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(&traces.columns).map_err(io)?;
            for row in &traces.rows {
                writer.write_record(row.iter().map(cell)).map_err(io)?;
            }
            writer.flush()?;
        }
    }
    Ok(())
}

/// The exit code of an error of a command.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<comb_client::Error>() {
        return match e {
            comb_client::Error::WorkflowFailed { .. } => exit::FAILED,
            e => e.code().map_or(exit::UNAVAILABLE, exit_code_of),
        };
    }
    // `comb serve`'s own errors: a server that cannot start, for the reason its code says.
    if let Some(e) = err.downcast_ref::<comb_frontend::Error>() {
        return exit_code_of(e.code());
    }
    if err.downcast_ref::<serde_json::Error>().is_some() || err.downcast_ref::<BadInput>().is_some() { exit::INVALID } else { exit::UNAVAILABLE }
}

/// The exit code of an error with gRPC code `code`.
fn exit_code_of(code: Code) -> u8 {
    match code {
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition | Code::OutOfRange | Code::Unauthenticated | Code::PermissionDenied => exit::INVALID,
        Code::NotFound => exit::NOT_FOUND,
        // A time-out of a call other than a run's wait (`invoke` and `status` tell that
        // one apart): the server did not answer in time.
        _ => exit::UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn traces() -> comb_client::Traces {
        comb_client::Traces {
            columns: vec!["function".into(), "calls".into(), "error".into()],
            rows: vec![vec![json!("reserve"), json!(12), json!(null)], vec![json!("pay, then \"ship\""), json!(3), json!("no stock")]],
            truncated: false,
        }
    }

    fn print(format: TraceFormat) -> String {
        let mut out = Vec::new();
        write_traces(&mut out, &traces(), format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn trace_answers_print_as_aligned_tables_json_lines_and_csv() {
        assert_eq!(
            print(TraceFormat::Table),
            "| function         | calls | error    |\n\
             |------------------|-------|----------|\n\
             | reserve          | 12    |          |\n\
             | pay, then \"ship\" | 3     | no stock |\n\
             (2 rows)\n"
        );
        assert_eq!(
            print(TraceFormat::Json),
            "{\"function\":\"reserve\",\"calls\":12,\"error\":null}\n{\"function\":\"pay, then \\\"ship\\\"\",\"calls\":3,\"error\":\"no stock\"}\n"
        );
        assert_eq!(print(TraceFormat::Csv), "function,calls,error\nreserve,12,\n\"pay, then \"\"ship\"\"\",3,no stock\n");
    }
}
