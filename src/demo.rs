//! `comb demo`: the hotel application end to end, on the machine at hand, in about a minute.
//!
//! A server process (this binary, `comb serve --apps hotel`) starts over a fresh data
//! directory. Concurrent clients book rooms with the `book` workflow (find and take a free
//! room as one transaction, then record a confirmation in a second step), each under its own
//! workflow id. Mid-burst the demo kills the server with SIGKILL and starts it again: the
//! server resumes the runs that had started and not ended, by itself. The demo then checks
//! exactly-once (every acknowledged booking returns the same answer when invoked again, no
//! room is taken twice, one confirmation per room taken) and prints SQL over the traces.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use comb_client::{Client, ListFilter, RunStatus, Traces};
use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};
use rand::Rng;
use serde_json::{Value, json};

use crate::cli::{TraceFormat, write_traces};

/// The hotels of the demo: 100 hotels x 10 rooms x 30 nights, as in DeathStarBench.
const HOTELS: i64 = 100;
const ROOMS: i64 = 10;
const NIGHTS: i64 = 30;

/// Longest wait for the server to start, or for a call.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Concurrent clients booking rooms.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of bookings before the server is killed.
    #[arg(long, default_value_t = 3.0)]
    burst_seconds: f64,
    /// Directory for the demo's data (must be new or empty); default: a temporary
    /// directory, removed at the end unless --keep is given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the temporary data directory and print its path.
    #[arg(long)]
    keep: bool,
}

/// The server, a child process.
struct ServerProcess {
    child: Child,
    addr: String,
    resumed: usize,
}

impl ServerProcess {
    /// Starts `comb serve` over `dir` on a free port and waits for its start-up line,
    /// `comb serving on ADDR (..., N runs resumed)`.
    fn start(dir: &Path) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("finding this program")?;
        let mut child = Command::new(exe)
            .args(["serve", "--apps", "hotel", "--partitions", "2", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the server")?;
        let stderr = child.stderr.take().context("the server's messages")?;
        let (lines, received) = std::sync::mpsc::channel();
        // Reads the server's messages to their end, so that its pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match received.recv_timeout(WAIT) {
                Ok(line) if line.starts_with("comb serving on ") => {
                    let addr = line["comb serving on ".len()..].split(' ').next().unwrap_or_default().to_owned();
                    let resumed = line.rsplit(", ").next().and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok());
                    let resumed = resumed.with_context(|| format!("reading the runs resumed in {line:?}"))?;
                    return Ok(ServerProcess { child, addr, resumed });
                }
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    bail!("the server did not start: {}", seen.join("\n"));
                }
            }
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::builder(self.addr.clone()).timeout(WAIT).connect().await?)
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        Ok(())
    }
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    ensure!(args.clients >= 1, "--clients must be at least 1");
    ensure!(args.burst_seconds > 0.0, "--burst-seconds must be more than 0");
    let (dir, temporary) = match &args.data_dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!("--data-dir {} is not empty; give a new or empty directory", dir.display());
            }
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new().prefix("comb-demo-").tempdir()?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    println!("Comb demo: hotel bookings as exactly-once workflows, through a crash");
    println!("  data directory: {}", dir.display());
    tokio::runtime::Runtime::new()?.block_on(demo(args, &dir))?;
    match temporary {
        Some(temporary) if args.keep => println!("\nThe data directory is kept at {}.", temporary.keep().display()),
        Some(_) => println!("\nThe data directory was removed (--keep keeps it)."),
        None => println!("\nThe data is in {}.", dir.display()),
    }
    Ok(())
}

async fn demo(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let mut server = ServerProcess::start(dir)?;
    let client = server.client().await?;
    for hotel in 0..HOTELS {
        let input = json!({ "hotel": hotel, "rooms": ROOMS, "dates": NIGHTS });
        client.invoke::<Value>("hotel_open", &input).id(format!("open-{hotel}")).await?;
    }
    println!();
    println!("1. A server process started with the hotel application: {HOTELS} hotels x {ROOMS} rooms x {NIGHTS} nights.");
    println!("   `book` finds a free room and takes it in ONE transaction, then records a");
    println!("   confirmation in a second step; each booking runs under its own workflow id.");
    println!();
    println!("2. {} clients book rooms for {} s; then the server is killed with SIGKILL.", args.clients, args.burst_seconds);
    let (tried, acked, clients) = burst(&server, args).await?;
    server.kill()?;
    for client in clients {
        client.await??;
    }
    let (tried, acked) = (tried.lock().map(|t| t.clone()).unwrap_or_default(), acked.lock().map(|a| a.clone()).unwrap_or_default());
    println!("   killed after {} bookings were acknowledged ({} started).", HumanCount(acked.len() as u64), HumanCount(tried.len() as u64));

    server = ServerProcess::start(dir)?;
    let client = server.client().await?;
    println!();
    println!("3. Restarted over the same data: the server resumed {} unfinished runs by itself.", server.resumed);
    let running = client.list_workflows_up_to(&ListFilter { status: Some(RunStatus::Running), ..ListFilter::default() }, tried.len()).await?;
    for run in running {
        let ended = client.get_workflow(&run.id, true).await?;
        ensure!(ended.status == RunStatus::Succeeded, "resumed run {} did not succeed: {:?}", run.id, ended.error);
    }

    println!();
    println!("4. Exactly once: every booking is invoked again with its id.");
    check(&client, &tried, &acked).await?;

    println!();
    println!("5. SQL over the traces (function_invocations, change_data, workflows):");
    for (title, sql) in [
        (
            "the functions that ran, and how long they took",
            "SELECT function, count(*) AS calls, sum(CASE WHEN replayed THEN 1 ELSE 0 END) AS replayed, \
             CAST(avg(duration_us) AS BIGINT) AS avg_us FROM function_invocations GROUP BY function ORDER BY calls DESC",
        ),
        (
            "bookings by outcome",
            "SELECT status, CASE WHEN output LIKE '%\"room\":null%' THEN 'sold out' ELSE 'room taken' END AS outcome, \
             count(*) AS runs, CAST(avg(duration_us) AS BIGINT) AS avg_us FROM workflows WHERE name = 'book' GROUP BY 1, 2 ORDER BY 2",
        ),
        (
            "the last three confirmations, with the room each run took",
            "SELECT c.workflow_id, r.key AS room, c.after AS confirmation FROM change_data c \
             JOIN change_data r ON r.workflow_id = c.workflow_id AND r.table_name = 'hotel_rooms' \
             WHERE c.table_name = 'hotel_confirmations' ORDER BY c.lsn DESC LIMIT 3",
        ),
    ] {
        println!();
        println!("   -- {title}");
        println!("   {sql}");
        let traces = client.query_traces(sql, true).await?;
        let mut out = Vec::new();
        write_traces(&mut out, &traces, TraceFormat::Table)?;
        for line in String::from_utf8_lossy(&out).lines() {
            println!("   {line}");
        }
    }
    println!();
    println!("   Ask your own: comb trace \"SELECT ...\" against `comb serve` (docs/tracing.md).");
    server.kill()?;
    Ok(())
}

type Runs = Arc<Mutex<BTreeMap<String, Value>>>;

/// The clients' tasks: each ends when told to stop or when the server dies under its call.
type Clients = Vec<tokio::task::JoinHandle<anyhow::Result<()>>>;

/// Starts the burst and returns once it has lasted its time, with the clients' calls still
/// in flight: every id tried with its input, the output of every acknowledged run, and the
/// clients.
async fn burst(server: &ServerProcess, args: &DemoArgs) -> anyhow::Result<(Runs, Runs, Clients)> {
    let tried: Runs = Arc::default();
    let acked: Runs = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let bar = ProgressBar::new_spinner();
    // The rate in whole bookings a second (`{per_sec}` prints four decimals).
    let rate = |state: &ProgressState, out: &mut dyn std::fmt::Write| _ = write!(out, "{}/s", HumanCount(state.per_sec() as u64));
    bar.set_style(ProgressStyle::with_template("   {spinner} {human_pos} bookings acknowledged  ({rate}, {elapsed})")?.with_key("rate", rate));
    bar.enable_steady_tick(Duration::from_millis(100));
    let client = server.client().await?;
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, tried, acked, stop, bar) = (client.clone(), Arc::clone(&tried), Arc::clone(&acked), Arc::clone(&stop), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                let id = format!("book-{c}-{seq}");
                let (hotel, night) = {
                    let mut rng = rand::rng();
                    (rng.random_range(0..HOTELS), rng.random_range(0..NIGHTS))
                };
                let input = json!({ "booking": id, "hotel": hotel, "date": night, "user": c as u64 * 1_000_000 + seq });
                tried.lock().map_err(|_| anyhow::anyhow!("a client panicked"))?.insert(id.clone(), input.clone());
                match client.invoke::<Value>("book", &input).id(id.clone()).run().await {
                    Ok(run) if run.status == RunStatus::Succeeded => {
                        acked.lock().map_err(|_| anyhow::anyhow!("a client panicked"))?.insert(id, run.output.unwrap_or_default());
                        bar.inc(1);
                    }
                    Ok(run) => bail!("booking {id} failed: {:?}", run.error),
                    // The server died under the call: the run resumes, or never started.
                    Err(_) => return Ok(()),
                }
                seq += 1;
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.burst_seconds)).await;
    stop.store(true, Ordering::Release);
    // The kill comes while the clients' last calls are in flight.
    bar.finish();
    Ok((tried, acked, tasks))
}

/// Invokes every booking again and checks the store and the traces.
async fn check(client: &Client, tried: &BTreeMap<String, Value>, acked: &BTreeMap<String, Value>) -> anyhow::Result<()> {
    let mut taken = 0usize;
    for (id, input) in tried {
        let run = client.invoke::<Value>("book", input).id(id.clone()).run().await?;
        ensure!(run.status == RunStatus::Succeeded, "booking {id} failed: {:?}", run.error);
        let output = run.output.unwrap_or_default();
        if let Some(first) = acked.get(id) {
            ensure!(run.deduplicated && &output == first, "booking {id} answered {output} after {first}: it ran twice");
        }
        taken += usize::from(!output["room"].is_null());
    }
    println!("   {} acknowledged bookings answered as before, running nothing again; {} started", HumanCount(acked.len() as u64), HumanCount((tried.len() - acked.len()) as u64));
    println!("   and unacknowledged ones ended once. {} rooms taken, {} sold out.", HumanCount(taken as u64), HumanCount((tried.len() - taken) as u64));
    let count = |traces: Traces| -> anyhow::Result<(u64, u64)> {
        let row = traces.rows.first().context("a count has a row")?;
        Ok((row[0].as_u64().unwrap_or(0), row[1].as_u64().unwrap_or(0)))
    };
    let rooms = count(client.query_traces("SELECT count(*), count(DISTINCT key) FROM change_data WHERE table_name = 'hotel_rooms' AND operation = 'update'", true).await?)?;
    let confirmations = count(client.query_traces("SELECT count(*), count(DISTINCT key) FROM change_data WHERE table_name = 'hotel_confirmations'", true).await?)?;
    let runs = count(client.query_traces("SELECT count(*), count(DISTINCT id) FROM workflows WHERE name = 'book'", true).await?)?;
    let taken = taken as u64;
    ensure!(rooms == (taken, taken), "rooms taken in the traces: {rooms:?}, expected {taken} once each");
    ensure!(confirmations == (taken, taken), "confirmations in the traces: {confirmations:?}, expected {taken}");
    ensure!(runs == (tried.len() as u64, tried.len() as u64), "runs in the traces: {runs:?}, expected {} once each", tried.len());
    println!("   The traces agree: {0} rooms taken once each, {0} confirmations, {1} runs ended once each. OK", HumanCount(taken), HumanCount(tried.len() as u64));
    Ok(())
}
