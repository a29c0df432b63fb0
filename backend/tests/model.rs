//! Model-based test: random sequences of transactions (inserts, upserts, deletes, scans,
//! aborts, multi-partition writes, concurrent batches, restarts) against a BTreeMap oracle.

use std::collections::BTreeMap;

use comb_backend::{Engine, EngineOptions, Error, Function, Invocation};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

#[derive(Debug, Clone)]
enum Op {
    Insert(i64, i64),
    Put(i64, i64),
    Delete(i64),
    Abort(i64, i64),
    MultiPut(i64, i64, i64),
    Scan(i64, i64),
    /// The first rows of a range, by a LIMIT that reads only them, from every partition.
    Head(i64, i64, i64),
    ByValue(i64),
    Get(i64),
    Concurrent(Vec<(i64, i64)>),
    /// Multi-partition additions to two keys each, at once: they may share a barrier, where
    /// each must see the writes of those before it (a lost update shows in the sums).
    ConcurrentMulti(Vec<(i64, i64, i64)>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let k = -20i64..20;
    let v = -4i64..4;
    prop_oneof![
        4 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => k.clone().prop_map(Op::Delete),
        1 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Abort(k, v)),
        2 => (k.clone(), k.clone(), v.clone()).prop_map(|(a, b, v)| Op::MultiPut(a, b, v)),
        2 => (k.clone(), k.clone()).prop_map(|(a, b)| Op::Scan(a.min(b), a.max(b))),
        1 => (k.clone(), k.clone(), 0i64..6).prop_map(|(a, b, n)| Op::Head(a.min(b), a.max(b), n)),
        1 => v.clone().prop_map(Op::ByValue),
        2 => k.clone().prop_map(Op::Get),
        1 => proptest::collection::btree_map(k.clone(), v.clone(), 1..8).prop_map(|m| Op::Concurrent(m.into_iter().collect())),
        1 => proptest::collection::vec((k.clone(), k, v), 2..10).prop_map(Op::ConcurrentMulti),
        1 => Just(Op::Reopen),
    ]
}

fn functions() -> Vec<Function> {
    let k = |input: &Json, f: &str| input[f].as_i64().unwrap();
    vec![
        Function::new("insert").statement("i", "INSERT INTO kv (k, v) VALUES ($1, $2)").partition_by("k").run(move |tx, input| {
            tx.execute("i", (k(&input, "k"), k(&input, "v")))?;
            Ok(Json::Null)
        }),
        Function::new("put")
            .statement("p", "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v")
            .partition_by("k")
            .run(move |tx, input| {
                tx.execute("p", (k(&input, "k"), k(&input, "v")))?;
                Ok(Json::Null)
            }),
        Function::new("delete").statement("d", "DELETE FROM kv WHERE k = $1 RETURNING v").partition_by("k").run(move |tx, input| {
            Ok(json!(tx.query_opt::<i64>("d", (k(&input, "k"),))?))
        }),
        Function::new("abort")
            .statement("p", "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v")
            .partition_by("k")
            .run(move |tx, input| {
                tx.execute("p", (k(&input, "k"), k(&input, "v")))?;
                Err("changed my mind".into())
            }),
        Function::new("multi_put")
            .statement("p", "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v")
            .run(move |tx, input| {
                tx.execute("p", (k(&input, "a"), k(&input, "v")))?;
                tx.execute("p", (k(&input, "b"), k(&input, "v")))?;
                Ok(Json::Null)
            }),
        Function::new("multi_add")
            .statement("add", "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = kv.v + excluded.v")
            .run(move |tx, input| {
                tx.execute("add", (k(&input, "a"), k(&input, "v")))?;
                tx.execute("add", (k(&input, "b"), k(&input, "v")))?;
                Ok(Json::Null)
            }),
        Function::new("scan").statement("s", "SELECT k, v FROM kv WHERE k >= $1 AND k < $2").run(move |tx, input| {
            Ok(json!(tx.query_as::<(i64, i64)>("s", (k(&input, "lo"), k(&input, "hi")))?))
        }),
        Function::new("head").statement("s", "SELECT k, v FROM kv WHERE k >= $1 AND k < $2 LIMIT $3").run(move |tx, input| {
            Ok(json!(tx.query_as::<(i64, i64)>("s", (k(&input, "lo"), k(&input, "hi"), k(&input, "n")))?))
        }),
        Function::new("by_value").statement("s", "SELECT k FROM kv WHERE v = $1").run(move |tx, input| {
            Ok(json!(tx.query_as::<i64>("s", (k(&input, "v"),))?))
        }),
        Function::new("get").statement("g", "SELECT v FROM kv WHERE k = $1").partition_by("k").run(move |tx, input| {
            Ok(json!(tx.query_opt::<i64>("g", (k(&input, "k"),))?))
        }),
    ]
}

async fn open(dir: &std::path::Path, row_cache_bytes: usize) -> Engine {
    // Writing back at once with no row cache, else gathering writes in memory till the end.
    let writeback_bytes = if row_cache_bytes == 0 { 0 } else { EngineOptions::default().writeback_bytes };
    let engine = Engine::open(dir, EngineOptions { partitions: 3, row_cache_bytes, writeback_bytes, ..EngineOptions::default() }).await.unwrap();
    if engine.catalog().table("kv").is_none() {
        engine.execute_ddl("CREATE TABLE kv (k BIGINT PRIMARY KEY, v BIGINT NOT NULL); CREATE INDEX kv_by_v ON kv (v)").await.unwrap();
    }
    for f in functions() {
        engine.register(f).unwrap();
    }
    engine
}

async fn check(ops: Vec<Op>, row_cache_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path(), row_cache_bytes).await;
    let mut oracle: BTreeMap<i64, i64> = BTreeMap::new();
    let call = |name: &str, input: Json| Invocation::new(name, input);
    for op in ops {
        match op {
            Op::Insert(k, v) => {
                let result = engine.invoke(call("insert", json!({ "k": k, "v": v }))).await;
                match oracle.entry(k) {
                    std::collections::btree_map::Entry::Occupied(_) => assert!(matches!(result, Err(Error::UniqueViolation { .. })), "{result:?}"),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        result.unwrap();
                        slot.insert(v);
                    }
                }
            }
            Op::Put(k, v) => {
                engine.invoke(call("put", json!({ "k": k, "v": v }))).await.unwrap();
                oracle.insert(k, v);
            }
            Op::Delete(k) => {
                let out = engine.invoke(call("delete", json!({ "k": k }))).await.unwrap();
                assert_eq!(out.value, json!(oracle.remove(&k)));
            }
            Op::Abort(k, v) => {
                assert!(engine.invoke(call("abort", json!({ "k": k, "v": v }))).await.is_err());
            }
            Op::MultiPut(a, b, v) => {
                engine.invoke(call("multi_put", json!({ "a": a, "b": b, "v": v }))).await.unwrap();
                oracle.insert(a, v);
                oracle.insert(b, v);
            }
            Op::Scan(lo, hi) => {
                let out = engine.invoke(call("scan", json!({ "lo": lo, "hi": hi }))).await.unwrap();
                let expected: Vec<(i64, i64)> = oracle.range(lo..hi).map(|(k, v)| (*k, *v)).collect();
                assert_eq!(out.value, json!(expected), "scan [{lo}, {hi}) in key order");
            }
            Op::Head(lo, hi, n) => {
                let out = engine.invoke(call("head", json!({ "lo": lo, "hi": hi, "n": n }))).await.unwrap();
                let expected: Vec<(i64, i64)> = oracle.range(lo..hi).take(n as usize).map(|(k, v)| (*k, *v)).collect();
                assert_eq!(out.value, json!(expected), "the first {n} of [{lo}, {hi}) in key order");
            }
            Op::ByValue(v) => {
                let out = engine.invoke(call("by_value", json!({ "v": v }))).await.unwrap();
                let expected: Vec<i64> = oracle.iter().filter(|(_, x)| **x == v).map(|(k, _)| *k).collect();
                assert_eq!(out.value, json!(expected), "index lookup of {v}");
            }
            Op::Get(k) => {
                let out = engine.invoke(call("get", json!({ "k": k }))).await.unwrap();
                assert_eq!(out.value, json!(oracle.get(&k)));
            }
            Op::Concurrent(puts) => {
                let calls = puts.iter().map(|(k, v)| engine.invoke(call("put", json!({ "k": k, "v": v }))));
                for result in futures::future::join_all(calls).await {
                    result.unwrap();
                }
                oracle.extend(puts);
            }
            Op::ConcurrentMulti(adds) => {
                let calls = adds.iter().map(|(a, b, d)| engine.invoke(call("multi_add", json!({ "a": a, "b": b, "v": d }))));
                for result in futures::future::join_all(calls).await {
                    result.unwrap();
                }
                for (a, b, d) in adds {
                    *oracle.entry(a).or_default() += d;
                    *oracle.entry(b).or_default() += d;
                }
            }
            Op::Reopen => {
                engine.close().await.unwrap();
                engine = open(dir.path(), row_cache_bytes).await;
            }
        }
    }
    let out = engine.invoke(call("scan", json!({ "lo": i64::MIN, "hi": i64::MAX }))).await.unwrap();
    assert_eq!(out.value, json!(oracle.into_iter().collect::<Vec<_>>()));
    engine.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    // The row cache off, holding a few rows (evicting all the time), and at its default.
    fn transactions_match_a_btreemap(ops in proptest::collection::vec(op(), 1..40), row_cache_bytes in prop_oneof![Just(0), Just(400), Just(64 << 20)]) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check(ops, row_cache_bytes));
    }
}
