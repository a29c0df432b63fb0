//! Counters: the smallest workflow there is, one writing step. The end-to-end benchmark's
//! workload: every run adds one, so the counters' sum equals the runs that succeeded.
//! `counter_pair` adds one to two counters in two parallel branches, each its own recorded
//! step (the crash campaign's parallel workflow).

use comb_backend::Function;
use serde_json::json;

use crate::{App, int};

/// The counter application.
pub const APP: App = App {
    name: "counter",
    schema: "CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)",
    functions,
    workflows: &[
        r#"{"name": "counter", "steps": [{"id": "add", "function": "counter_add", "input": "$input"}], "output": "$add"}"#,
        r#"{"name": "counter_pair",
            "steps": [
              {"id": "a", "function": "counter_add", "input": {"id": "$input.a"}},
              {"id": "b", "function": "counter_add", "input": {"id": "$input.b"}}
            ],
            "output": {"a": "$a.n", "b": "$b.n"}}"#,
        r#"{"name": "counter_read", "steps": [{"id": "get", "function": "counter_get", "input": "$input"}], "output": "$get"}"#,
    ],
};

fn functions() -> Vec<Function> {
    vec![
        Function::new("counter_add")
            .statement("add", "INSERT INTO counters (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = counters.n + excluded.n RETURNING n")
            .partition_by("id")
            .run(|tx, input| {
                let id = int(&input, "id")?;
                let by = input.get("by").and_then(serde_json::Value::as_i64).unwrap_or(1);
                let n: i64 = tx.query_one("add", (id, by))?;
                Ok(json!({ "id": id, "n": n }))
            }),
        Function::new("counter_get")
            .statement("get", "SELECT n FROM counters WHERE id = $1")
            .partition_by("id")
            .run(|tx, input| {
                let id = int(&input, "id")?;
                let n: Option<i64> = tx.query_opt("get", (id,))?;
                Ok(json!({ "id": id, "n": n.unwrap_or(0) }))
            }),
    ]
}
