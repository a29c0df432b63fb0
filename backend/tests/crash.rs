//! Crash safety: a child process runs single- and multi-partition transactions under load
//! and is killed with SIGKILL, several rounds on one directory. After each reopen the state
//! holds exactly the acknowledged transactions plus possibly some unacknowledged ones,
//! each whole: never a part of one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use comb_backend::testkit::{CRASH_ACCOUNTS, crash_functions};
use comb_backend::{Engine, EngineOptions, Invocation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn run_child_until_killed(dir: &Path, round: u32, kill_after_acks: usize) -> BTreeSet<i64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comb-backend-crash-child"))
        .args([dir.to_str().unwrap(), &round.to_string(), "32", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the crash child");
    let stdout = child.stdout.take().unwrap();
    let (lines, acks) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = BTreeSet::new();
    while acked.len() < kill_after_acks {
        let line = acks.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("round {round}: the child stopped after {} acks", acked.len()));
        acked.insert(line.parse::<i64>().unwrap_or_else(|_| panic!("round {round}: unreadable line {line:?}")));
    }
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("the reader thread");
    // Whole lines written before the kill are acknowledgements too; a cut last line is not.
    let rest: Vec<String> = acks.try_iter().collect();
    for (i, line) in rest.iter().enumerate() {
        match line.parse::<i64>() {
            Ok(txn) => drop(acked.insert(txn)),
            Err(_) if i + 1 == rest.len() => {}
            Err(_) => panic!("round {round}: unreadable line {line:?}"),
        }
    }
    acked
}

#[test]
fn acknowledged_transactions_survive_sigkill_and_none_is_partial() {
    const ROUNDS: u32 = 4;
    let seed: u64 = std::env::var("COMB_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test seed: {seed} (set COMB_TEST_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut acked_total = BTreeSet::new();
    for round in 0..ROUNDS {
        let kill_after = rng.random_range(100..3_000);
        acked_total.extend(run_child_until_killed(dir.path(), round, kill_after));
        runtime.block_on(async {
            let engine = Engine::open(dir.path(), EngineOptions { partitions: 3, ..EngineOptions::default() }).await.expect("reopen after SIGKILL");
            for f in crash_functions() {
                engine.register(f).unwrap();
            }
            let dump = engine.invoke(Invocation::new("dump", json!({}))).await.unwrap().value;
            let accounts: Vec<(i64, i64)> = serde_json::from_value(dump["accounts"].clone()).unwrap();
            let markers: Vec<(i64, i64, i64)> = serde_json::from_value(dump["markers"].clone()).unwrap();
            assert_eq!(accounts.len() as i64, CRASH_ACCOUNTS);
            let mut sums: BTreeMap<i64, i64> = BTreeMap::new();
            let mut per_txn: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
            for (account, txn, delta) in &markers {
                *sums.entry(*account).or_default() += delta;
                per_txn.entry(*txn).or_default().push((*account, *delta));
            }
            for (id, balance) in &accounts {
                assert_eq!(*balance, sums.get(id).copied().unwrap_or(0), "round {round}: account {id}: balance and markers disagree");
            }
            for (txn, parts) in &per_txn {
                let deltas: i64 = parts.iter().map(|(_, d)| d).sum();
                let whole = (parts.len() == 1 && deltas == 1) || (parts.len() == 2 && deltas == 0);
                assert!(whole, "round {round}: transaction {txn} is partial: {parts:?}");
            }
            let missing: Vec<&i64> = acked_total.iter().filter(|t| !per_txn.contains_key(t)).collect();
            assert!(missing.is_empty(), "round {round}: acknowledged transactions lost: {missing:?}");
            let unacknowledged = per_txn.keys().filter(|t| !acked_total.contains(t)).count();
            eprintln!("round {round}: killed after {kill_after} acks; {} acknowledged in all, {unacknowledged} present without acknowledgement", acked_total.len());
            engine.close().await.unwrap();
        });
    }
}
