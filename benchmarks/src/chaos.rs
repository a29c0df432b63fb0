//! The crash campaign: the four example applications' workloads, mixed, with multi-partition
//! transactions and a workflow of two parallel branches, run by closed-loop clients against
//! a server child process that is killed with SIGKILL at a random moment of every round and
//! restarted. After each restart every invariant Comb promises is checked:
//!
//! - every run a client was answered is there, with the output it was first answered;
//! - every run cut by the kill ends exactly once when invoked again under its id (the server
//!   resumes the runs it had started by itself);
//! - the applications' own checks (counter sum, no room reserved twice and one confirmation
//!   each, no stock below zero and orders matching the stock taken, every post in each of its
//!   followers' timelines once), over what the clients were answered;
//! - at the end, the traces: each run's `workflows` row once, no change row twice, and a
//!   committed change and invocation for every counter increment (none lost, none doubled).
//!
//! A sixth of the runs are invoked without an id: a chain of two writing units whose start
//! goes with its first unit ([`crate::chain`]). A client whose call the kill cut cannot ask
//! for such a run again; once the restarted server has ended every run it had started, each
//! of their units must have taken effect once or not at all, and every answered one once.
//!
//! The server child is this binary (`comb-bench chaos-server`): the stock server with the
//! example applications, its traces flushed every 100 ms and their files merged two at a
//! time, so that kills land around flushes and merges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comb_client::{Client, Run, RunStatus};
use comb_frontend::{Server, ServerOptions};
use futures::StreamExt as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::apps::{Mix, Op, Outcome, Sizes, Tally, Workload, check};
use crate::chain;
use crate::comb::{Comb, outcome};
use crate::driver::{Backoff, Failure, fresh_dir, spread};

/// Longest a server child may take to start (recovery included).
const START_WAIT_MAX: Duration = Duration::from_secs(120);

/// What the server child prints once it listens: `<prefix><addr> <resumed>`.
const LISTENING: &str = "chaos server listening on ";

/// Longest a run cut by a kill is retried after the restart while the server says "later",
/// and the longest pause between two tries.
const SETTLE_WAIT_MAX: Duration = Duration::from_secs(60);
const SETTLE_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Checks of acknowledged runs in flight at once.
const VERIFY_CONCURRENCY: usize = 32;

/// Longest a client waits before invoking again after an "overloaded" answer.
const OVERLOAD_PAUSE: Duration = Duration::from_millis(20);

/// Most violations kept for the report (all are counted).
const VIOLATIONS_SHOWN_MAX: usize = 20;

/// How often the server child checkpoints: far more often than the default, so that kills
/// land before, during and after checkpoints (a flushed store, a trimmed log) in every round.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// How often the server child looks for stranded runs to resume: far more often than the
/// default, so that its passes race the load's own runs (which it must leave alone).
const RESUME_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, clap::Args)]
pub(crate) struct ChaosArgs {
    /// Rounds: in each the mixed load runs, the server is killed with SIGKILL at a random
    /// moment and restarted, and every invariant is checked.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Longest a round's load runs: the kill lands at a random moment between a fifth of it
    /// and its end.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// The server's partitions.
    #[arg(long, default_value_t = 2)]
    partitions: u16,
    /// The data's size (1.0 is Apiary's; see `workload --help`).
    #[arg(long, default_value_t = 0.01)]
    scale: f64,
    /// Seed of the operations and the kill moments (default: from the clock); a campaign
    /// with the same seed kills at the same moments.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the data here (a fresh subdirectory; the directory is created if missing);
    /// default: a temporary one, removed at the end unless a violation was found.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ChaosServerArgs {
    /// The server's data.
    #[arg(long)]
    data_dir: PathBuf,
    /// The server's partitions.
    #[arg(long)]
    partitions: u16,
}

/// One operation of the campaign: one of the workloads' (a hotel booking is two units, its
/// room taken in a multi-function transaction; shop checkouts are multi-partition
/// transactions; retwis posts fan out across partitions), two counters
/// incremented by two parallel branches, or a chain of two units invoked without an id.
#[derive(Debug, Clone)]
enum ChaosOp {
    App(Op),
    CounterPair { a: i64, b: i64 },
    Chain { key: i64 },
}

impl ChaosOp {
    /// Client `client`'s operation `seq` of round `round`, whose mix has this nonce: the six
    /// kinds in equal shares.
    fn new(sizes: &Sizes, nonce: u64, round: u32, client: usize, seq: u64) -> ChaosOp {
        let roll = spread(client, seq ^ nonce.rotate_left(17));
        let mix = |workload| Mix { workload, sizes: *sizes, nonce }.op(client, seq);
        match roll % 6 {
            0 => ChaosOp::CounterPair { a: ((roll >> 8) % sizes.keys as u64) as i64, b: ((roll >> 32) % sizes.keys as u64) as i64 },
            1 => ChaosOp::App(mix(Workload::Counter)),
            2 => ChaosOp::App(mix(Workload::Hotel)),
            3 => ChaosOp::App(mix(Workload::Shop)),
            4 => ChaosOp::App(mix(Workload::Retwis)),
            _ => ChaosOp::Chain { key: chain::key(round, client, seq) },
        }
    }

    fn workflow(&self) -> (&'static str, Value) {
        match self {
            ChaosOp::App(op) => op.workflow(),
            ChaosOp::CounterPair { a, b } => ("counter_pair", json!({ "a": a, "b": b })),
            ChaosOp::Chain { key } => (chain::WORKFLOW, json!({ "key": key })),
        }
    }

    /// Whether the op is invoked under an id of the campaign's (and again under it when the
    /// kill cuts its call).
    fn has_id(&self) -> bool {
        !matches!(self, ChaosOp::Chain { .. })
    }

    /// Records what the ended run means for the applications' checks.
    fn record(&self, run: &Run, tally: &Tally) -> Result<(), String> {
        match self {
            ChaosOp::App(op) => match outcome(op, run) {
                Ok(outcome) => tally.record(outcome),
                Err(Failure::Fatal(err)) => return Err(format!("{err:#}")),
                Err(Failure::Retryable) => return Err(format!("run {}: refused for now", run.id)),
            },
            ChaosOp::CounterPair { .. } if run.status == RunStatus::Succeeded => {
                tally.record(Outcome::Counted);
                tally.record(Outcome::Counted);
            }
            ChaosOp::CounterPair { .. } => return Err(format!("run {} of counter_pair did not succeed: {:?}", run.id, run.error)),
            ChaosOp::Chain { .. } if run.status == RunStatus::Succeeded && run.output == Some(json!({ "first": 1, "second": 1 })) => {}
            ChaosOp::Chain { key } => {
                return Err(format!("run {} of {} (key {key}) was answered {:?} {:?} {:?}, not each unit once", run.id, chain::WORKFLOW, run.status, run.output, run.error));
            }
        }
        Ok(())
    }
}

/// A server child process.
struct ServerChild {
    child: tokio::process::Child,
    addr: String,
    /// Runs it resumed by itself at its start.
    resumed: u64,
}

impl ServerChild {
    /// Starts `comb-bench chaos-server` over `dir/data`, its messages going to
    /// `dir/server-<n>.log`, and waits until it listens.
    async fn start(dir: &Path, partitions: u16, n: u32) -> anyhow::Result<ServerChild> {
        let log = std::fs::File::create(dir.join(format!("server-{n}.log")))?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["chaos-server", "--partitions", &partitions.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the server child")?;
        let stdout = child.stdout.take().context("the server child's output")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_WAIT_MAX, lines.next_line())
            .await
            .with_context(|| format!("the server child did not listen within {START_WAIT_MAX:?} (see server-{n}.log)"))??
            .with_context(|| format!("the server child exited during its start (see server-{n}.log)"))?;
        let (addr, resumed) = line.strip_prefix(LISTENING).and_then(|rest| rest.split_once(' ')).with_context(|| format!("the server child said {line:?}"))?;
        Ok(ServerChild { addr: addr.to_owned(), resumed: resumed.parse()?, child })
    }

    /// SIGKILL, and the child reaped.
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// The server child: the stock server with every example application, until killed.
pub(crate) fn serve(args: &ChaosServerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut options = ServerOptions::default();
        options.engine.partitions = args.partitions;
        options.tracing.flush_age = Duration::from_millis(100);
        options.tracing.merge_files = 2;
        options.checkpoint_interval = CHECKPOINT_INTERVAL;
        options.resume_interval = RESUME_INTERVAL;
        let mut builder = Server::builder().data_dir(&args.data_dir).options(options);
        for app in comb_examples::APPS.iter().chain([&chain::APP]) {
            builder = app.install(builder);
        }
        let server = builder.build().await?;
        let listening = server.listen("127.0.0.1:0".parse()?).await?;
        println!("{LISTENING}{} {}", listening.local_addr(), server.resumed());
        server.serve_until_signal(listening).await?;
        Ok(())
    })
}

/// The campaign's report.
#[derive(Debug, Serialize)]
pub(crate) struct ChaosReport {
    bench: &'static str,
    rounds: u32,
    seconds: f64,
    clients: usize,
    partitions: u16,
    scale: f64,
    seed: u64,
    kills: u32,
    /// Runs whose client was answered before the kill.
    runs_acknowledged: u64,
    /// Runs whose call the kill cut: invoked again under their id after the restart.
    runs_cut: u64,
    /// Of those, the runs the server had already (the kill came after they started).
    runs_cut_found: u64,
    /// Runs without an id answered (counted in `runs_acknowledged` too).
    runs_answered_without_id: u64,
    /// Runs without an id whose call the kill (or a passing failure) cut: not invoked again.
    runs_cut_without_id: u64,
    /// Of those, the runs that took effect (the kill came after their first unit): ended by
    /// the restarted servers by themselves.
    runs_cut_without_id_ended: u64,
    /// Runs the restarted servers resumed by themselves.
    runs_resumed_by_server: u64,
    /// Reads of acknowledged runs that found them with their first output: each after its
    /// round's kill, and all again after the last.
    outputs_verified: u64,
    /// Applications' checks passed (four per round).
    app_checks: u64,
    /// Checks of the traces.
    trace_checks: u64,
    /// Every invariant checked, one per run and per check.
    invariants_checked: u64,
    pub(crate) violations: u64,
    /// The first violations found.
    violations_shown: Vec<String>,
    seconds_total: f64,
}

/// Violations found, counted and the first few kept.
#[derive(Default)]
struct Violations {
    count: u64,
    shown: Vec<String>,
}

impl Violations {
    fn add(&mut self, what: String) {
        eprintln!("  VIOLATION: {what}");
        self.count += 1;
        if self.shown.len() < VIOLATIONS_SHOWN_MAX {
            self.shown.push(what);
        }
    }
}

/// What one round's clients saw.
#[derive(Default)]
struct RoundRuns {
    /// Runs answered, with their status and output.
    acked: Vec<(String, RunStatus, Option<Value>)>,
    /// Runs whose call the kill cut, under their ids.
    cut: Vec<(String, ChaosOp)>,
    /// Runs without an id whose call the kill cut.
    cut_without_id: u64,
    /// Runs without an id answered.
    answered_without_id: u64,
    /// Answers the invariants forbid (a run failing that may not fail, an error before the kill).
    violations: Vec<String>,
}

pub(crate) fn run(args: &ChaosArgs) -> anyhow::Result<ChaosReport> {
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.rounds < chain::ROUNDS_MAX, "--rounds must be below {}", chain::ROUNDS_MAX);
    anyhow::ensure!(args.clients < chain::CLIENTS_MAX, "--clients must be below {}", chain::CLIENTS_MAX);
    anyhow::ensure!(args.seconds.is_finite() && args.seconds >= 0.5, "--seconds must be at least 0.5, not {}", args.seconds);
    let sizes = Sizes::new(args.scale)?;
    let seed = args.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    let dir = fresh_dir(args.dir.as_deref(), "comb-chaos-")?;
    eprintln!("chaos: {} rounds of up to {} s, {} clients, {} partitions, scale {}, seed {seed}; data in {}", args.rounds, args.seconds, args.clients, args.partitions, args.scale, dir.path().display());
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(campaign(args, &sizes, seed, dir.path()));
    // The evidence stays when something went wrong, or when a folder was given.
    if report.as_ref().map_or(true, |r| r.violations > 0) || args.dir.is_some() {
        let kept = dir.keep();
        eprintln!("chaos: the data and the servers' logs are kept in {}", kept.display());
    }
    report
}

async fn campaign(args: &ChaosArgs, sizes: &Sizes, seed: u64, dir: &Path) -> anyhow::Result<ChaosReport> {
    let began = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut server = ServerChild::start(dir, args.partitions, 0).await?;
    let mut comb = Comb::connect(&server.addr, 4).await?;
    for workload in Workload::ALL {
        comb.load(workload, sizes).await?;
    }
    let mut before = BTreeMap::new();
    for workload in Workload::ALL {
        before.insert(workload.name(), comb.answers(workload, sizes).await?);
    }
    let tally = Arc::new(Tally::default());
    let mut violations = Violations::default();
    // Every run answered, with what it was answered: read back after its round's kill and
    // once more after the last.
    let mut answered = Vec::new();
    // Runs without an id answered, and cut by kills, over the campaign.
    let (mut answered_without_id, mut cut_without_id) = (0, 0);
    let mut report = ChaosReport {
        bench: "chaos",
        rounds: args.rounds,
        seconds: args.seconds,
        clients: args.clients,
        partitions: args.partitions,
        scale: args.scale,
        seed,
        kills: 0,
        runs_acknowledged: 0,
        runs_cut: 0,
        runs_cut_found: 0,
        runs_answered_without_id: 0,
        runs_cut_without_id: 0,
        runs_cut_without_id_ended: 0,
        runs_resumed_by_server: 0,
        outputs_verified: 0,
        app_checks: 0,
        trace_checks: 0,
        invariants_checked: 0,
        violations: 0,
        violations_shown: Vec::new(),
        seconds_total: 0.0,
    };
    for round in 1..=args.rounds {
        let kill_after = Duration::from_secs_f64(rng.random_range(args.seconds * 0.2..=args.seconds));
        let nonce = seed.wrapping_add(u64::from(round));
        let runs = load_until_killed(&comb, server, sizes, nonce, round, args.clients, kill_after, &tally).await?;
        report.kills += 1;
        let restarted = Instant::now();
        server = ServerChild::start(dir, args.partitions, round).await?;
        comb = Comb::connect(&server.addr, 4).await?;
        report.runs_resumed_by_server += server.resumed;
        for violation in runs.violations {
            violations.add(format!("round {round}: {violation}"));
        }
        // The runs without an id that the kill cut: each took effect once or not at all,
        // once the server has ended those it had started.
        answered_without_id += runs.answered_without_id;
        cut_without_id += runs.cut_without_id;
        let tally_without_id = settled_chains(&comb).await?;
        if let Some(violation) = tally_without_id.violation(answered_without_id, cut_without_id) {
            violations.add(format!("round {round}: {violation}"));
        }
        // The runs the kill cut end exactly once, under their ids.
        let mut found = 0;
        for (id, op) in &runs.cut {
            let run = invoke_again(&comb, id, op).await?;
            found += u64::from(run.deduplicated);
            if let Err(violation) = op.record(&run, &tally) {
                violations.add(format!("round {round}: run {id}, cut by the kill: {violation}"));
            }
        }
        // Every run answered is there, with the output it was answered.
        let verified = verify_acknowledged(comb.client(), &runs.acked, &mut violations).await?;
        // The applications' checks, over everything answered since the load.
        let mut passed = Vec::new();
        for workload in Workload::ALL {
            let after = comb.answers(workload, sizes).await?;
            let verdict = check(workload, sizes, &before[workload.name()], &after, &tally);
            if verdict.starts_with("ok") {
                passed.push(workload.name());
            } else {
                violations.add(format!("round {round}: {}: {verdict}", workload.name()));
            }
        }
        eprintln!(
            "round {round}/{}: killed after {:.1} s; {} runs answered, {} cut by the kill ({found} had started; the server resumed {}), {} without an id cut ({} took effect in all rounds); back in {:.1} s; {verified} outputs as first answered; checks ok: {}",
            args.rounds,
            kill_after.as_secs_f64(),
            runs.acked.len(),
            runs.cut.len(),
            server.resumed,
            runs.cut_without_id,
            u64::try_from(tally_without_id.first.rows).unwrap_or(0).saturating_sub(answered_without_id),
            restarted.elapsed().as_secs_f64(),
            passed.join(", ")
        );
        report.invariants_checked += runs.cut.len() as u64 + runs.acked.len() as u64 + Workload::ALL.len() as u64 + 1;
        report.runs_answered_without_id = answered_without_id;
        report.runs_cut_without_id = cut_without_id;
        report.runs_cut_without_id_ended = u64::try_from(tally_without_id.first.rows).unwrap_or(0).saturating_sub(answered_without_id);
        answered.extend(runs.acked);
        report.runs_acknowledged = answered.len() as u64;
        report.runs_cut += runs.cut.len() as u64;
        report.runs_cut_found += found;
        report.outputs_verified += verified;
        report.app_checks += passed.len() as u64;
    }
    let verified = verify_acknowledged(comb.client(), &answered, &mut violations).await?;
    eprintln!("after the last kill: {verified} of the {} runs answered in every round read back as answered", answered.len());
    report.outputs_verified += verified;
    report.invariants_checked += answered.len() as u64;
    let with_ids = report.runs_acknowledged - answered_without_id + report.runs_cut;
    let without_ids = answered_without_id + report.runs_cut_without_id_ended;
    let trace_checks = check_traces(comb.client(), &tally, with_ids, without_ids, &mut violations).await?;
    eprintln!("traces: {trace_checks} checks of the workflows, change_data and function_invocations tables");
    report.trace_checks = trace_checks;
    report.invariants_checked += trace_checks;
    drop(comb);
    server.kill().await?;
    report.violations = violations.count;
    report.violations_shown = violations.shown;
    report.seconds_total = (began.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    Ok(report)
}

/// Runs the mixed load with `clients` clients until `kill_after`, then kills the server
/// (the flag first, so that every call the kill cuts is known as cut) and waits for the
/// clients.
#[allow(clippy::too_many_arguments)]
async fn load_until_killed(comb: &Comb, server: ServerChild, sizes: &Sizes, nonce: u64, round: u32, clients: usize, kill_after: Duration, tally: &Arc<Tally>) -> anyhow::Result<RoundRuns> {
    let killed = AtomicBool::new(false);
    let runs = Mutex::new(RoundRuns::default());
    let client_loop = |client: usize| {
        let (killed, runs, tally) = (&killed, &runs, tally);
        async move {
            for seq in 0.. {
                // A round's runs per client are bounded by the chain's keys.
                if killed.load(Ordering::Acquire) || seq >= chain::SEQ_MAX {
                    return;
                }
                let op = ChaosOp::new(sizes, nonce, round, client, seq);
                let id = format!("chaos-{nonce}-{client}-{seq}");
                let (workflow, input) = op.workflow();
                let mut later = Backoff::new(OVERLOAD_PAUSE, OVERLOAD_PAUSE);
                loop {
                    let invoke = comb.connection(client).invoke::<Value>(workflow, &input);
                    let result = if op.has_id() { invoke.id(id.clone()).run().await } else { invoke.run().await };
                    let mut runs = runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    match result {
                        Ok(run) => {
                            if let Err(violation) = op.record(&run, tally) {
                                runs.violations.push(violation);
                            }
                            runs.answered_without_id += u64::from(!op.has_id());
                            runs.acked.push((run.id, run.status, run.output));
                        }
                        // After the kill, a failure of the connection cuts the call; an
                        // answer the server gave (it named the request wrong) does not.
                        Err(err) if killed.load(Ordering::Acquire) && !answered_by_server(&err) => {
                            if op.has_id() {
                                runs.cut.push((id, op));
                            } else {
                                runs.cut_without_id += 1;
                            }
                            return;
                        }
                        // A run without an id is invoked again only when it was refused before
                        // anything of it ran; after any other passing failure it may have
                        // started (and the server ends it), so it counts as cut.
                        Err(err) if !op.has_id() && err.is_retryable() && err.code() != Some(comb_client::Code::ResourceExhausted) => {
                            runs.cut_without_id += 1;
                        }
                        Err(err) if err.is_retryable() => {
                            drop(runs);
                            later.wait().await;
                            continue;
                        }
                        Err(err) => {
                            runs.violations.push(format!("run {id} ({workflow} {input}) failed before the kill: {err}"));
                            return;
                        }
                    }
                    break;
                }
            }
        }
    };
    let kill = async {
        tokio::time::sleep(kill_after).await;
        killed.store(true, Ordering::Release);
        server.kill().await
    };
    let (killing, _) = tokio::join!(kill, futures::future::join_all((0..clients).map(client_loop)));
    killing.with_context(|| format!("killing the server in round {round}"))?;
    Ok(runs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Whether an error is an answer of a live server about the request itself (which no kill
/// explains), rather than a failed, reset or refused connection.
fn answered_by_server(err: &comb_client::Error) -> bool {
    use comb_client::Code;
    matches!(
        err.code(),
        Some(Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition | Code::PermissionDenied | Code::Unauthenticated | Code::OutOfRange | Code::Unimplemented)
    )
}

/// The tallies of the runs without an id, once no such run is running: the restarted
/// server resumes the ones it had started by itself (for `SETTLE_WAIT_MAX` at most).
async fn settled_chains(comb: &Comb) -> anyhow::Result<chain::Tally> {
    let client = comb.client();
    let deadline = Instant::now() + SETTLE_WAIT_MAX;
    let mut later = Backoff::new(OVERLOAD_PAUSE, SETTLE_PAUSE_MAX);
    let running = comb_client::ListFilter { name: Some(chain::WORKFLOW.to_owned()), status: Some(RunStatus::Running), page_size: 1, page_token: None };
    // The restarted server may refuse for a while (resuming its runs fills its slots).
    let passing = |err: &comb_client::Error| err.is_retryable() && Instant::now() < deadline;
    loop {
        match client.list_workflows_up_to(&running, 1).await {
            Ok(runs) if runs.is_empty() => break,
            Ok(runs) => anyhow::ensure!(Instant::now() < deadline, "run {} without an id still runs {} s after the restart", runs[0].id, SETTLE_WAIT_MAX.as_secs()),
            Err(err) if passing(&err) => {}
            Err(err) => return Err(anyhow::Error::new(err).context("listing the running runs without an id")),
        }
        later.wait().await;
    }
    loop {
        match client.invoke::<Value>(chain::TALLY, &json!({})).run().await {
            Ok(run) => return run.into_output().context("the tallies of the runs without an id"),
            Err(err) if passing(&err) => later.wait().await,
            Err(err) => return Err(anyhow::Error::new(err).context("reading the tallies of the runs without an id")),
        }
    }
}

/// Invokes a run cut by the kill again under its id, as often as the restarted server asks
/// to retry later (for `SETTLE_WAIT_MAX` at most).
async fn invoke_again(comb: &Comb, id: &str, op: &ChaosOp) -> anyhow::Result<Run> {
    let (workflow, input) = op.workflow();
    let deadline = Instant::now() + SETTLE_WAIT_MAX;
    let mut later = Backoff::new(OVERLOAD_PAUSE, SETTLE_PAUSE_MAX);
    loop {
        match comb.client().invoke::<Value>(workflow, &input).id(id.to_owned()).run().await {
            Ok(run) => return Ok(run),
            Err(err) if err.is_retryable() && Instant::now() < deadline => later.wait().await,
            Err(err) => return Err(anyhow::Error::new(err).context(format!("invoking {id} again after the restart"))),
        }
    }
}

/// Checks that every acknowledged run is there with the status and output it was answered.
async fn verify_acknowledged(client: &Client, acked: &[(String, RunStatus, Option<Value>)], violations: &mut Violations) -> anyhow::Result<u64> {
    let mut checks = futures::stream::iter(acked)
        .map(|(id, status, output)| async move {
            let run = match client.get_workflow(id, false).await {
                Ok(run) => run,
                Err(err) if err.code() == Some(comb_client::Code::NotFound) => return Ok(Err(format!("run {id} was answered {status:?} {output:?}, and is now unknown: {err}"))),
                Err(err) => return Err(anyhow::Error::new(err).context(format!("reading run {id}"))),
            };
            Ok::<_, anyhow::Error>((run.status == *status && run.output == *output).then_some(()).ok_or_else(|| {
                format!("run {id} was answered {status:?} {output:?}, and is now {:?} {:?}", run.status, run.output)
            }))
        })
        .buffer_unordered(VERIFY_CONCURRENCY);
    let mut verified = 0;
    while let Some(result) = checks.next().await {
        match result? {
            Ok(()) => verified += 1,
            Err(violation) => violations.add(violation),
        }
    }
    Ok(verified)
}

/// One number a trace query answers (its first row's first column).
async fn traced_count(client: &Client, sql: &str) -> anyhow::Result<i64> {
    let traces = client.query_traces(sql, true).await.with_context(|| format!("querying the traces: {sql}"))?;
    traces.rows.first().and_then(|row| row.first()).and_then(Value::as_i64).with_context(|| format!("{sql}: no number in {:?}", traces.rows))
}

/// The traces after the last restart: each run's `workflows` row once (`runs` under the
/// campaign's ids, `without_ids` that took effect without one), no change row twice, and
/// for each counter increment one change and one committed invocation.
async fn check_traces(client: &Client, tally: &Tally, runs: u64, without_ids: u64, violations: &mut Violations) -> anyhow::Result<u64> {
    let counted = tally.counted.load(Ordering::Relaxed);
    let chains = format!("SELECT count(*) FROM workflows WHERE name = '{}' AND status = 'succeeded'", chain::WORKFLOW);
    let distinct_chains = format!("SELECT count(DISTINCT id) FROM workflows WHERE name = '{}'", chain::WORKFLOW);
    let expectations: [(&str, &str, i64); 7] = [
        ("workflows rows of the campaign's runs", "SELECT count(*) FROM workflows WHERE id LIKE 'chaos-%'", runs as i64),
        ("distinct runs in workflows", "SELECT count(DISTINCT id) FROM workflows WHERE id LIKE 'chaos-%'", runs as i64),
        ("succeeded runs without an id in workflows (one per run that took effect)", &chains, without_ids as i64),
        ("distinct runs without an id in workflows", &distinct_chains, without_ids as i64),
        (
            "change rows kept twice",
            "SELECT count(*) FROM (SELECT lsn, table_name, key FROM change_data GROUP BY lsn, table_name, key HAVING count(*) > 1)",
            0,
        ),
        ("changes of the counters (one per increment answered)", "SELECT count(*) FROM change_data WHERE table_name = 'counters'", counted),
        (
            "committed counter_add invocations (one per increment answered)",
            "SELECT count(*) FROM function_invocations WHERE function = 'counter_add' AND status = 'succeeded' AND NOT replayed AND lsn IS NOT NULL",
            counted,
        ),
    ];
    let mut checks = 0;
    for (what, sql, want) in expectations {
        let got = traced_count(client, sql).await?;
        checks += 1;
        if got != want {
            violations.add(format!("traces: {what}: {got}, expected {want}"));
        }
    }
    // A writing step that took effect is traced once; a second, unreplayed one would be an
    // effect applied twice.
    let doubled = traced_count(
        client,
        "SELECT count(*) FROM (SELECT workflow_id, step, function FROM function_invocations
          WHERE workflow_id LIKE 'chaos-%' AND status = 'succeeded' AND NOT replayed AND NOT read_only
          GROUP BY workflow_id, step, function HAVING count(*) > 1)",
    )
    .await?;
    checks += 1;
    if doubled != 0 {
        violations.add(format!("traces: {doubled} writing steps ran twice"));
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_every_kind_and_repeats_itself() {
        let sizes = Sizes::new(0.01).unwrap();
        let ops: Vec<ChaosOp> = (0..1_000).map(|seq| ChaosOp::new(&sizes, 9, 2, (seq % 7) as usize, seq)).collect();
        let names: std::collections::BTreeSet<&str> = ops.iter().map(|op| op.workflow().0).collect();
        for name in ["counter_pair", "counter", "hotel_search", "book", "browse", "cart_add", "cart_checkout", "post", "timeline", chain::WORKFLOW] {
            assert!(names.contains(name), "no {name} in {names:?}");
        }
        let keys: Vec<i64> = ops.iter().filter_map(|op| if let ChaosOp::Chain { key } = op { Some(*key) } else { None }).collect();
        assert_eq!(keys.iter().collect::<std::collections::BTreeSet<_>>().len(), keys.len(), "a chain's key is its run's alone");
        let again = ChaosOp::new(&sizes, 9, 2, 3, 3);
        assert_eq!(again.workflow(), ops[3].workflow(), "a cut run is invoked again with the same input");
    }

    #[test]
    fn a_pair_counts_twice_and_a_failed_pair_is_a_violation() {
        let tally = Tally::default();
        let mut run = Run {
            id: "chaos-1-0-0".into(),
            name: "counter_pair".into(),
            version: 1,
            status: RunStatus::Succeeded,
            input: json!({}),
            output: Some(json!({"a": 1, "b": 1})),
            error: None,
            started_us: 0,
            ended_us: Some(1),
            deduplicated: false,
        };
        let pair = ChaosOp::CounterPair { a: 1, b: 2 };
        pair.record(&run, &tally).unwrap();
        assert_eq!(tally.counted.load(Ordering::Relaxed), 2);
        run.status = RunStatus::Failed;
        assert!(pair.record(&run, &tally).is_err());
        assert_eq!(tally.counted.load(Ordering::Relaxed), 2);
    }
}
