//! The workloads against Comb: each operation is a workflow invoked through the client
//! library over gRPC, against a server this process starts (the stock example
//! applications) or one given by address (`comb serve --apps ...`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use comb_client::{Client, Run, RunStatus, SqlFunction, SqlStatement};
use comb_frontend::{Listening, Server, ServerOptions};
use comb_backend::SlowSteps;
use comb_log::LogStats;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::apps::{Answers, CheckQuery, Op, Outcome, PRICE, Sizes, Workload, check_queries};
use crate::driver::{Failure, progress_bar};

/// Load calls in flight at once.
const LOAD_CONCURRENCY: usize = 32;

/// Longest a call may take before the benchmark gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the benchmark waits after a load for the state store's compactions.
const SETTLE_MAX: Duration = Duration::from_secs(300);

/// A Comb server and connections to it.
pub(crate) struct Comb {
    /// The server, when this process started it.
    embedded: Option<(Server, Listening)>,
    /// HTTP/2 connections the clients share, round robin.
    connections: Vec<Client>,
}

impl Comb {
    /// Starts a server over `data_dir` serving `workload`'s application.
    pub(crate) async fn start(data_dir: &Path, options: ServerOptions, workload: Workload, connections: usize) -> anyhow::Result<Comb> {
        let server = workload.app().install(Server::builder().data_dir(data_dir).options(options)).build().await?;
        let listening = server.listen("127.0.0.1:0".parse()?).await?;
        let mut comb = Comb::connect(&listening.local_addr().to_string(), connections).await?;
        comb.embedded = Some((server, listening));
        Ok(comb)
    }

    /// Connects to a running server.
    pub(crate) async fn connect(addr: &str, connections: usize) -> anyhow::Result<Comb> {
        anyhow::ensure!(connections >= 1, "--connections must be at least 1");
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            clients.push(Client::builder(addr.to_owned()).timeout(CALL_TIMEOUT).connect().await.with_context(|| format!("connecting to the Comb server at {addr}"))?);
        }
        Ok(Comb { embedded: None, connections: clients })
    }

    /// The log's counters and the executors' slow steps, when the server is in this process.
    pub(crate) fn server_stats(&self) -> Option<(LogStats, SlowSteps)> {
        self.embedded.as_ref().map(|(server, _)| (server.engine().log().stats(), server.engine().slow_steps()))
    }

    /// After a load, when the server is in this process: checkpoints and waits for the
    /// state store's compactions, as the baseline checkpoints PostgreSQL after its load, so
    /// that neither system's measured window carries the load's background work.
    pub(crate) async fn settle(&self) -> anyhow::Result<()> {
        if let Some((server, _)) = &self.embedded
            && !server.engine().settle(SETTLE_MAX).await?
        {
            eprintln!("the state store still had compactions to do {} s after the load: they run during the measurement", SETTLE_MAX.as_secs());
        }
        Ok(())
    }

    /// The first connection.
    pub(crate) fn client(&self) -> &Client {
        &self.connections[0]
    }

    /// Creates the workload's data and registers its check queries (idempotent: what exists is
    /// left as it is).
    pub(crate) async fn load(&self, workload: Workload, sizes: &Sizes) -> anyhow::Result<()> {
        let calls: Vec<(&str, Value)> = match workload {
            Workload::Counter => Vec::new(),
            Workload::Hotel => (0..sizes.hotels).map(|hotel| ("hotel_open", json!({ "hotel": hotel, "rooms": sizes.rooms, "dates": sizes.dates }))).collect(),
            Workload::Shop => {
                let chunk = comb_examples::shop::LOAD_ITEMS_MAX;
                (0..(sizes.items + chunk - 1) / chunk).map(|i| ("shop_load", json!({ "from": i * chunk, "to": ((i + 1) * chunk).min(sizes.items), "price": PRICE, "stock": sizes.stock }))).collect()
            }
            Workload::Retwis => (0..sizes.users).map(|user| ("retwis_load", json!({ "user": user, "users": sizes.users, "followees": sizes.followees, "posts": sizes.posts }))).collect(),
        };
        // The check queries, as SQL-only functions the server keeps: registered once here,
        // asked by `answers` before and after every run.
        for query in check_queries(workload) {
            let name = check_name(workload, query);
            let params = if query.by_users { vec!["from".to_owned(), "to".to_owned()] } else { Vec::new() };
            let function = SqlFunction { name: name.clone(), statements: vec![SqlStatement { name: "q".into(), sql: query.sql.into(), params }], partition_by: None };
            self.client().register_function(&function).await?;
            self.client().register_workflow(&json!({ "name": name, "steps": [{ "id": "q", "function": name, "input": "$input" }], "output": "$q" }).to_string()).await?;
        }
        let bar = progress_bar(calls.len() as u64, &format!("loading {}", workload.name()));
        let mut done = futures::stream::iter(calls.into_iter().enumerate())
            .map(|(i, (workflow, input))| async move {
                let client = &self.connections[i % self.connections.len()];
                client.invoke::<Value>(workflow, &input).await.with_context(|| format!("loading: {workflow} {input}"))
            })
            .buffer_unordered(LOAD_CONCURRENCY);
        while let Some(result) = done.next().await {
            result?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Connection `client % connections`.
    pub(crate) fn connection(&self, client: usize) -> &Client {
        &self.connections[client % self.connections.len()]
    }

    /// Runs one operation on connection `client % connections`.
    pub(crate) async fn run(&self, client: usize, op: &Op) -> Result<Outcome, Failure> {
        let (workflow, input) = op.workflow();
        match self.connection(client).invoke::<Value>(workflow, &input).run().await {
            Ok(run) => outcome(op, &run),
            Err(err) if err.is_retryable() => Err(Failure::Retryable),
            Err(err) => Err(Failure::Fatal(anyhow::Error::new(err).context(format!("{workflow} {input}")))),
        }
    }

    /// The answers to the workload's check queries, asked through SQL-only functions (each a
    /// multi-partition read).
    pub(crate) async fn answers(&self, workload: Workload, sizes: &Sizes) -> anyhow::Result<Answers> {
        let client = self.client();
        let mut answers = Answers::new();
        for query in check_queries(workload) {
            let name = check_name(workload, query);
            let mut ranges = query.ranges(sizes);
            while let Some((from, to)) = ranges.pop() {
                let rows: Vec<serde_json::Map<String, Value>> = match client.invoke(&name, &json!({ "from": from, "to": to })).await {
                    Ok(rows) => rows,
                    // A piece that grew beyond a statement's row bounds is asked in halves.
                    Err(err) if query.by_users && from < to && err.to_string().contains("-rows-max") => {
                        let middle = from + (to - from) / 2;
                        ranges.extend([(from, middle), (middle + 1, to)]);
                        continue;
                    }
                    Err(err) => return Err(err.into()),
                };
                let row = rows.first().with_context(|| format!("{}: no row", query.sql))?;
                for column in query.columns {
                    let value = row.get(*column).and_then(Value::as_i64).with_context(|| format!("{}: no integer {column} in {row:?}", query.sql))?;
                    *answers.entry(format!("{}.{column}", query.name)).or_default() += value;
                }
            }
        }
        Ok(answers)
    }

    /// Waits until the traces hold every run the log holds (the server's tracing layer must
    /// be on): a query that reads nothing, asked with catch-up.
    pub(crate) async fn catch_up_traces(&self) -> anyhow::Result<()> {
        self.client().query_traces("SELECT 1", true).await?;
        Ok(())
    }

    /// Asks the traces (the server's tracing layer must be on).
    pub(crate) async fn traced_runs(&self, workflow: &str) -> anyhow::Result<u64> {
        let sql = format!("SELECT count(*) FROM workflows WHERE name = '{workflow}'");
        let traced = self.client().query_traces(&sql, true).await?;
        Ok(traced.rows.first().and_then(|r| r.first()).and_then(Value::as_u64).unwrap_or(0))
    }

    /// Closes the connections, and the server when this process started it.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        drop(self.connections);
        if let Some((server, listening)) = self.embedded {
            listening.shutdown().await?;
            server.close().await?;
        }
        Ok(())
    }
}

/// The SQL-only function (and workflow) that asks a check query.
fn check_name(workload: Workload, query: &CheckQuery) -> String {
    format!("bench_check_{}_{}", workload.name(), query.name)
}

/// What an operation's ended run means for the checks; a failure the mix does not expect is
/// fatal.
pub(crate) fn outcome(op: &Op, run: &Run) -> Result<Outcome, Failure> {
    let output = match run.status {
        RunStatus::Succeeded => run.output.clone().unwrap_or_default(),
        // The only failure the mixes expect: a checkout with an item out of stock.
        RunStatus::Failed if matches!(op, Op::ShopCheckout { .. }) && run.error.as_deref().is_some_and(|e| e.contains("in stock")) => return Ok(Outcome::Refused),
        _ => return Err(Failure::Fatal(anyhow::anyhow!("{} {}: the run did not succeed ({:?}): {:?}", run.name, run.input, run.status, run.error))),
    };
    Ok(match op {
        Op::CounterAdd { .. } => Outcome::Counted,
        Op::HotelBook { user, .. } if output["confirmed"] == json!(true) => Outcome::Booked { user: *user },
        Op::HotelBook { .. } => Outcome::NoRoom,
        Op::ShopCheckout { .. } => Outcome::CheckedOut { lines: output["lines"].as_i64().unwrap_or(0), units: output["units"].as_i64().unwrap_or(0) },
        Op::RetwisPost { .. } => Outcome::Posted,
        Op::HotelSearch { .. } | Op::ShopBrowse { .. } | Op::ShopCartAdd { .. } | Op::RetwisTimeline { .. } => Outcome::Done,
    })
}
