//! `comb demo`: what Comb guarantees, shown on the machine at hand.
//!
//! A writer process (this binary, `comb demo-writer`) runs concurrent clients that append to
//! the durable shared log and print each acknowledged LSN. The demo shows the burst with a
//! live rate, kills the writer with SIGKILL mid-burst, reopens the log, and checks that every
//! acknowledged record is there with its exact payload, and that LSNs are dense.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Args;
use comb_log::{ANY_TAG, Error, LogBook, LogOptions, Lsn};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Concurrent clients of the writer process.
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// Seconds of the burst before the writer is killed.
    #[arg(long, default_value_t = 3.0)]
    burst_seconds: f64,
    /// Directory for the demo's data (must not hold anything else); default: a temporary
    /// directory, removed at the end unless --keep is given.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the temporary data directory and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WriterArgs {
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    clients: u32,
    /// Safety bound: the writer stops by itself after this long.
    #[arg(long, default_value_t = 120)]
    seconds_max: u64,
}

/// The payload client `client` writes in its `seq`-th append: readable, and checkable.
fn payload(client: u32, seq: u64) -> Bytes {
    Bytes::from(format!("client {client} append {seq}: reserve room {} on day {}", seq % 10, seq % 30))
}

pub(crate) fn writer(args: &WriterArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds_max);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let log = LogBook::open_dir(&args.data_dir, LogOptions::default()).await?;
        let clients: Vec<_> = (0..args.clients)
            .map(|client| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut seq = 0;
                    while Instant::now() < deadline {
                        match log.append(&[u64::from(client) + 1], payload(client, seq)).await {
                            Ok(lsn) => {
                                let mut out = std::io::stdout().lock();
                                writeln!(out, "{lsn} {client} {seq}")?;
                                out.flush()?;
                                seq += 1;
                            }
                            Err(Error::QueueFull { .. }) => tokio::task::yield_now().await,
                            Err(err) => return Err(anyhow::Error::from(err)),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for client in clients {
            client.await??;
        }
        Ok(())
    })
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    ensure!(args.clients >= 1, "--clients must be at least 1");
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
    let log_dir = dir.join("log");

    println!("Comb demo: the shared log, durable under a crash");
    println!("  data directory: {}", dir.display());
    println!();
    println!("1. A writer process starts {} clients appending records; each append returns", args.clients);
    println!("   only once its record is fsync'd (group commit: many appends share one fsync).");
    let acked = burst(&log_dir, args)?;
    println!();
    println!("3. Reopening the log and checking every acknowledged append.");
    verify(&log_dir, &acked)?;

    match temporary {
        Some(temporary) if args.keep => println!("\nThe data directory is kept at {}.", temporary.keep().display()),
        Some(_) => println!("\nThe data directory was removed (--keep keeps it)."),
        None => println!("\nThe data is in {}.", dir.display()),
    }
    println!("What runs today is the shared log. Transactions, workflows and SQL over traces are");
    println!("built on it next; the README says where the project stands.");
    Ok(())
}

/// Runs the writer, shows the burst, kills the writer with SIGKILL; returns the acknowledged
/// appends: LSN -> (client, seq).
fn burst(log_dir: &Path, args: &DemoArgs) -> anyhow::Result<BTreeMap<Lsn, (u32, u64)>> {
    let mut child = Command::new(std::env::current_exe().context("find the comb executable")?)
        .arg("demo-writer")
        .arg("--data-dir")
        .arg(log_dir)
        .args(["--clients", &args.clients.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the writer process")?;
    let stdout = child.stdout.take().context("the writer's output")?;
    let (lines, acks) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("   {spinner} {human_pos} appends acknowledged  ({per_sec}, {elapsed})")?);
    let mut acked = BTreeMap::new();
    let started = Instant::now();
    let burst = Duration::from_secs_f64(args.burst_seconds);
    let record = |line: &str, acked: &mut BTreeMap<Lsn, (u32, u64)>| -> bool {
        let mut fields = line.split(' ').map(str::parse::<u64>);
        match (fields.next(), fields.next(), fields.next()) {
            (Some(Ok(lsn)), Some(Ok(client)), Some(Ok(seq))) => acked.insert(lsn, (client as u32, seq)).is_none(),
            _ => false, // a line cut by the kill
        }
    };
    while started.elapsed() < burst {
        match acks.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if record(&line, &mut acked) && acked.len() % 64 == 0 {
                    bar.set_position(acked.len() as u64);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bar.tick(),
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the writer process stopped by itself; run with COMB_LOG=debug to see why"),
        }
    }
    child.kill().context("kill the writer with SIGKILL")?;
    let status = child.wait()?;
    reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    for line in acks.try_iter() {
        record(&line, &mut acked);
    }
    bar.set_position(acked.len() as u64);
    bar.finish();
    println!();
    println!("2. Killed the writer with SIGKILL mid-burst ({status}) after {:.1} s:", started.elapsed().as_secs_f64());
    println!("   {} appends were acknowledged to its clients.", acked.len());
    ensure!(!acked.is_empty(), "the writer acknowledged nothing in {:.1} s", args.burst_seconds);
    Ok(acked)
}

fn verify(log_dir: &Path, acked: &BTreeMap<Lsn, (u32, u64)>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let started = Instant::now();
        let log = LogBook::open_dir(log_dir, LogOptions::default()).await?;
        let reopened = started.elapsed();
        let tail = log.tail();
        let (mut next, mut lost, mut wrong) = (1, Vec::new(), 0u64);
        let mut pending = acked.iter().peekable();
        while next <= tail {
            let records = log.read_range(ANY_TAG, next, usize::MAX).await?;
            for record in &records {
                ensure!(record.lsn == next, "LSN {next} is missing: the log is not dense");
                next += 1;
                while let Some((lsn, _)) = pending.next_if(|(lsn, _)| **lsn < record.lsn) {
                    lost.push(*lsn);
                }
                if let Some((_, (client, seq))) = pending.next_if(|(lsn, _)| **lsn == record.lsn)
                    && (record.payload != payload(*client, *seq) || record.tags != [u64::from(*client) + 1])
                {
                    wrong += 1;
                }
            }
        }
        lost.extend(pending.map(|(lsn, _)| *lsn));
        println!("   reopened in {:.0} ms; recovered tail: LSN {tail}", reopened.as_secs_f64() * 1e3);
        println!("   {} records were written but not yet acknowledged when the writer died (allowed)", tail as usize - acked.len());
        if !lost.is_empty() || wrong > 0 {
            bail!("{} acknowledged appends lost (first: {:?}), {wrong} with a wrong payload", lost.len(), lost.first());
        }
        println!("   ok: all {} acknowledged appends present with their exact payloads; LSNs dense from 1 to {tail}", acked.len());
        let last = log.read_prev(1, tail).await?.context("client 0 wrote nothing")?;
        println!("   the last record of client 0 (tag 1): LSN {}: {:?}", last.lsn, String::from_utf8_lossy(&last.payload));
        log.close().await?;
        Ok(())
    })
}
