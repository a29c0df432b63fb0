//! The child process of the backend's crash test: runs bumps and transfers (single- and
//! multi-partition transactions) from concurrent clients and prints one line per
//! acknowledged transaction, `<txn>`, until it is killed (or `seconds` pass).
//!
//! Usage: comb-backend-crash-child <dir> <round> <clients> <seconds>

use std::io::Write;
use std::time::{Duration, Instant};

use comb_backend::testkit::{CRASH_ACCOUNTS, CRASH_DDL, crash_functions};
use comb_backend::{Engine, EngineOptions, Invocation};
use serde_json::json;

/// How often the child checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, round, clients, seconds] = args.as_slice() else {
        eprintln!("usage: comb-backend-crash-child <dir> <round> <clients> <seconds>");
        std::process::exit(2);
    };
    let number = |v: &str| -> i64 { v.parse().unwrap_or_else(|_| std::process::exit(2)) };
    let (round, clients) = (number(round), number(clients));
    let deadline = Instant::now() + Duration::from_secs(number(seconds) as u64);
    let runtime = tokio::runtime::Runtime::new().expect("start the runtime");
    runtime.block_on(async move {
        // Odd rounds write back every few thousand rows, a chunk at a time, so that kills
        // land in the middle of write-backs too.
        let writeback_bytes = if round % 2 == 1 { 256 << 10 } else { EngineOptions::default().writeback_bytes };
        let engine = Engine::open(dir, EngineOptions { partitions: 3, writeback_bytes, ..EngineOptions::default() }).await.unwrap_or_else(|err| {
            eprintln!("open {dir}: {err}");
            std::process::exit(3)
        });
        if engine.catalog().table("accounts").is_none() {
            engine.execute_ddl(CRASH_DDL).await.expect("create the schema");
        }
        for f in crash_functions() {
            engine.register(f).expect("register");
        }
        for id in 0..CRASH_ACCOUNTS {
            engine.invoke(Invocation::new("open", json!({ "id": id }))).await.expect("open an account");
        }
        // Checkpoints all along, so that kills land in them too: a checkpoint that let the
        // log go below what the state store holds would lose acknowledged transactions.
        let checkpointing = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                if let Err(err) = checkpointing.checkpoint().await {
                    eprintln!("checkpoint: {err}");
                    return;
                }
            }
        });
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let mut i = 0i64;
                    while Instant::now() < deadline {
                        let txn = round * 1_000_000_000 + client * 1_000_000 + i;
                        i += 1;
                        let a = (txn * 7 + client) % CRASH_ACCOUNTS;
                        let invocation = if i % 4 == 0 {
                            Invocation::new("transfer", json!({ "from": a, "to": (a + 1 + client % (CRASH_ACCOUNTS - 1)) % CRASH_ACCOUNTS, "txn": txn }))
                        } else {
                            Invocation::new("bump", json!({ "id": a, "txn": txn }))
                        };
                        match engine.invoke(invocation).await {
                            Ok(_) => {
                                let mut out = std::io::stdout().lock();
                                writeln!(out, "{txn}").expect("write stdout");
                                out.flush().expect("flush stdout");
                            }
                            Err(err) if err.is_retryable() => tokio::task::yield_now().await,
                            Err(err) => {
                                eprintln!("invoke failed: {err}");
                                std::process::exit(4);
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("client task");
        }
    });
}
